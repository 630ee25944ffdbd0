"""Point-based registration on arrays: fits, their errors, and the checks of two lists' correspondence."""
