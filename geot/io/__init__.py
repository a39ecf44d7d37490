"""Reading and writing scans: meshes, point clouds, Teeth3DS label files."""

from geot.io.atomic import atomic_write
from geot.io.mesh import read_mesh, write_labelled_mesh
from geot.io.scan import Scan
from geot.io.teeth3ds import ScanFiles, find_scans, read_labels, read_scan, write_labels

__all__ = ["Scan", "ScanFiles", "atomic_write", "find_scans", "read_labels", "read_mesh", "read_scan",
           "write_labelled_mesh", "write_labels"]
