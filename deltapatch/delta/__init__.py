"""∆-Networks: gates (∆-modules and ablations), patched stages, the multi-task network."""
from .gates import GATES, ConstantGate, DeltaModule, RandomGate, StaticGate
from .network import BASE, DeltaNetwork, TaskPatch, TaskSpec
from .stage import BN_PLACEMENTS, PatchedStage, skip_pairs

__all__ = ["BASE", "BN_PLACEMENTS", "GATES", "ConstantGate", "DeltaModule", "DeltaNetwork", "PatchedStage",
           "RandomGate", "StaticGate", "TaskPatch", "TaskSpec", "skip_pairs"]
