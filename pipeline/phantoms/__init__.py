"""Phantom data made on the fly: figshare-format slices with tumours, and MR series in DICOM, for the demo,
the tests and the benchmarks."""
