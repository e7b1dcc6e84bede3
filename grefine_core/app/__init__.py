"""The grefine application, built on the kernel: the CLI, batches and manifests, saving and
publishing outputs (fingerprints, the report, image metadata), pictures, progress and display.

It imports the kernel (the rest of :mod:`grefine_core`); the kernel never imports it at import
time. Four documented delegates of the Python API reach it when they are called:
``GRefine.refine_many`` (:mod:`.batch`), ``GRefine.fingerprint`` (:mod:`.fingerprint`),
``RefineResult.to_dict`` (:mod:`.report`) and ``RefineResult.save`` (:mod:`.saving`).
"""
