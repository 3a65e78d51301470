"""Hook points and what runs on them: HookPoint, hook contexts, per-pass recording, ActivationCache, HookedRoot."""
