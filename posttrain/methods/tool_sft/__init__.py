"""TL-Training's supervised part for tool use (docs/methods.md "Tool use: TL-Training"), the method in one
package:

- `method.py`: the params, one sample per assistant turn (MAE), `build` and SPEC;
- `key_tokens.py`: PKT, the key tokens of a call and their weights.
The MAE rule and the per-turn samples stay in posttrain/tools/mae.py, a layer below: the trajectory builder
(posttrain/tools/trajectories.py) checks its adverse turns with the same rule.
"""
from __future__ import annotations

from posttrain.methods.tool_sft.method import SPEC

__all__ = ["SPEC"]
