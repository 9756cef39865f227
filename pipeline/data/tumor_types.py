"""The tumour classes of the figshare brain tumour dataset: the one place their codes and names live."""

TUMOR_TYPES: dict[int, str] = {1: "meningioma", 2: "glioma", 3: "pituitary"}


def tumor_type_name(code: int) -> str:
    """Return the name of a figshare tumour-type code (1, 2 or 3), or raise ``ValueError`` naming the code."""
    try:
        return TUMOR_TYPES[int(code)]
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"unknown tumour type {code!r}: expected one of {sorted(TUMOR_TYPES)}") from None
