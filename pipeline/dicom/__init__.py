"""DICOM in and out: MR series reading (``series``), SEG writing (``seg_writer``), and the clients of a DICOM server
over DIMSE (``pacs``) and over DICOMweb (``dicomweb``)."""
