"""The DICOM node (``python -m pipeline serve``): series pushed in, segmented with the warm model, SEG sent back.

One concern per module: ``config`` (the settings file), ``spool`` (instances on disk before success is answered),
``journal`` (what became of every series, in SQLite), ``scp`` (the Storage SCP), ``worker`` (segmentation),
``sender`` (SEGs out, retried), ``service`` (all of them started and stopped together), ``status``
(``serve --status``).
"""
