"""∆-Networks beyond classification (paper Section 3.2 and appendix): detection, segmentation,
transfer learning, zero-shot domain adaptation and training from scratch.

Each is a scenario (``conf/scenario/<name>.yaml``) whose ``runner`` is a function here taking
the composed config; the classification runner dispatches to it. Offline twins: synthetic
shapes (:mod:`.shapes`) for detection and segmentation, digits and shifted digits for zsda.
"""
