"""The hooked models: networks opened by capturing their graph, chains, the residual MLP, and their recipes."""
