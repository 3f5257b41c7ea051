"""deltapatch: ∆-Patching of frozen pre-trained CNNs with input-conditioned skip connections."""
from . import resolvers as _resolvers
from .backbones import available_backbones, create_backbone, get_adapter
from .delta import BASE, DeltaNetwork
from .errors import CheckpointError, ConfigError, DeltaPatchError, PatchError
from .patch import base_fingerprint, load_patch, read_patch_metadata, save_patch

_resolvers.register()  # ${dp.*} in conf/ (loader=gpu's worker count) resolves wherever deltapatch is imported

__version__ = "0.1.0"
__all__ = ["BASE", "CheckpointError", "ConfigError", "DeltaNetwork", "DeltaPatchError", "PatchError",
           "available_backbones", "base_fingerprint", "create_backbone", "get_adapter", "load_patch",
           "read_patch_metadata", "save_patch"]
