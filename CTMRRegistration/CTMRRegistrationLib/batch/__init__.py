"""The cohort runner, `ctmr-batch`: a CSV manifest of cases registered on Dask distributed.

`manifest` reads and checks the cases and fingerprints their inputs, `case` runs one case on a worker,
`summary` writes the cohort table, `cli` is the command line with its Dask client and progress. It needs the
`batch` extra (dask, distributed, bokeh, psutil): pip install "ctmr-registration[batch]".
"""
