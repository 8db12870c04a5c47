"""Makes this checkout importable as ansible_collections.guardrail.ecs in tests."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".cache" / "collections"


def _install_collection_loader():
    link = COLLECTIONS / "ansible_collections" / "guardrail" / "ecs"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../../.."))
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder

    paths = [str(COLLECTIONS)] + [p for p in sys.path if p.endswith("site-packages")]
    _AnsibleCollectionFinder(paths=paths)._install()


_install_collection_loader()
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
