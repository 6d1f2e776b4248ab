"""The cold start of a CPU attempt does not import torch._dynamo (issue 18: ~0.8 s of a
cold attempt's ~2-3 s on a quiet 2-core box), and AdamWSPAM's dynamo-free calls of torch's
undecorated optimizer methods train exactly like torch's decorated ones."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import io, json, sys
if sys.argv[1] == "preload":
    import torch._dynamo  # noqa: F401 - the decorated path, as under torch.compile
import torch
from models.config import GPTConfig
from models.gpt2 import GPT
from workers.train.optim import AdamWSPAM

torch.manual_seed(0)
m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0))
o = AdamWSPAM(m.optim_groups(0.1), lr=1e-3, spike_z=3.0, spike_clip_theta=10.0, reset_interval=3,
              rewarm_steps=2)
x = torch.randint(0, 64, (2, 16))
for _ in range(4):
    o.zero_grad()
    m(x, x)[1].backward()
    o.step()
buf = io.BytesIO()
torch.save(o.state_dict(), buf)
buf.seek(0)
o.load_state_dict(torch.load(buf, weights_only=True))
o.zero_grad()
m(x, x)[1].backward()
o.step()
with torch.no_grad():
    loss = float(m(x, x)[1])
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "loss": loss, "spam": o.spam_stats(),
                  "steps": [int(s["step"]) for s in o.state.values()][:1]}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_model_import_and_optimizer_steps_do_not_import_dynamo_and_match_the_decorated_path():
    fresh, decorated = _run("fresh"), _run("preload")
    assert fresh["dynamo"] is False
    assert decorated["dynamo"] is True
    assert fresh["loss"] == decorated["loss"]
    assert fresh["spam"] == decorated["spam"] and fresh["steps"] == decorated["steps"] == [5]
