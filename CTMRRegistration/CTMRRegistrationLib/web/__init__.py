"""`ctmr-web`: the registration panel and cohort review in a browser (trame, trame-slicer), served on loopback."""
