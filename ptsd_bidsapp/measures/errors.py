"""Exceptions raised by the participant-level measures."""


class MeasureError(ValueError):
    """Bad input data for a participant-level measure (the message names the file)."""
