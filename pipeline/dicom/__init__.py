"""DICOM in and out: MR series reading (``series``), phantom series (``phantom_series``), SEG writing and PACS."""
