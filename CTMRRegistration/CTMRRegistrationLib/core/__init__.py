"""Pure core: errors, matrices and conventions, image checks, foreground masks, shipped resources. No MRML, no vtk."""
