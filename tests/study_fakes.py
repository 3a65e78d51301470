"""Hand-made study results for the report tests: steer summaries whose every number is chosen, no model trained."""

from hookedmlp_analysis.family import ModelResult
from hookedmlp_analysis.steer_result import FRONTIER


def site(name: str, kind: str, role: str, score: float, hooks=None, draw: int = 0, depth: float = 0.5) -> dict:
    """One site of ``Steerability.summary()``: every score ``score``, its frontier the constant ``score``."""
    row = {
        "name": name,
        "kind": kind,
        "role": role,
        "hooks": hooks or [name],
        "depth": depth,
        "draw": draw,
        "pauc": score,
        "pauc_tune": score,
        "pauc_score": score,
        "heldout_flip": score,
        "heldout_collateral": 0.05,
        "selective": score,
        "heldout_coeff": 1.0,
        "frontier": [score] * len(FRONTIER),
    }
    if kind == "class" and role == "internal":
        row["sensitivity"] = [[0.0, score], [score, 2 * score]]
    return row


def result(variant: str, seed: int, inside: float, bias: float, logit: float, pixel: float = 0.05) -> ModelResult:
    """A model with one internal class ``layer1.post`` (pAUC ``inside``), two random draws there and the controls."""
    sites = [
        site("layer0.pre", "class", "input", pixel, depth=0.0),
        site("layer1.post", "class", "internal", inside),
        site("random @ layer1.post", "random", "internal", 0.01, hooks=["layer1.post"]),
        site("random @ layer1.post", "random", "internal", 0.03, hooks=["layer1.post"], draw=1),
        site("hook_logits", "class", "logits", logit, depth=1.0),
        site("bias", "bias", "logits", bias, depth=1.0),
    ]
    return ModelResult(
        variant,
        seed,
        0.1,
        0.97,
        ["layer1.post"],
        {"layer1.post": {"flip_rate": 0.5, "loss": 2.0, "accuracy_other": 0.5, "kl": 1.5}},
        {"layer1.post": inside},
        {"layer1.post": 1.0},
        0.0,
        0.0,
        steer={"pairs": 90, "settings": {}, "version": "", "sites": sites},
    )
