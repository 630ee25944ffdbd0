"""The library on an MRML scene: scene and logics, node I/O and conversions, transform nodes, the logic."""
