"""Exporting an edit in other tools' formats, one module per format (:mod:`unsee.export.lora`)."""
