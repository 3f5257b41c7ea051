"""One forward+backward of the 32-px ConvNeXt-Tiny on a fixed batch; prints torch's CPU capability
and a SHA-256 of the loss and all gradients, so runs under different ISA caps can be compared bit for bit."""
import hashlib, torch
from deltapatch.backbones.factory import create_backbone
torch.manual_seed(0)
m = create_backbone("convnext_tiny", num_classes=10, small_input=True)
x = torch.randn(64, 3, 32, 32); y = torch.randint(0, 10, (64,))
loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward()
h = hashlib.sha256(loss.detach().numpy().tobytes())
for p in m.parameters(): h.update(p.grad.numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), f"{loss.item():.10f}", h.hexdigest()[:16])
