"""Everything napari: sample data, reader, writer and dock widgets.

Nothing here is imported by ``import cellina``; napari loads these modules
through the manifest (``napari.yaml``) only when it needs them.
"""
