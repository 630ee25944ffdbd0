"""elastix: parameter maps, transforms and export, one job, the backends (executable, wheel, SlicerElastix)."""
