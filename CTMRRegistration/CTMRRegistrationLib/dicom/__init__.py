"""DICOM in and out, pure (pydicom, SimpleITK/GDCM; no MRML): image series, Spatial Registration objects, RTSTRUCT."""
