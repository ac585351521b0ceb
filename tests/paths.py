"""Where things are, for tests anywhere below tests/: the repository, the layer's source, the
package."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layer"
PACKAGE = LAYER / "iamdb"
