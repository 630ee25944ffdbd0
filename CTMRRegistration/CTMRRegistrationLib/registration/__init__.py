"""The registration pipeline on SimpleITK images: initialisation search, bias field, common region, stages."""
