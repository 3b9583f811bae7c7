"""Dataset importers, looked up by their ``skelssl prepare`` source name."""

from __future__ import annotations

import importlib

from skelssl.data.importers.base import Importer
from skelssl.errors import ConfigError
from skelssl.utils import closest

# source name -> (module, class). Modules are imported only when their source is used.
_REGISTRY: dict[str, tuple[str, str]] = {
    "ntu60": ("skelssl.data.importers.ntu", "NTU60Importer"),
    "ntu120": ("skelssl.data.importers.ntu", "NTU120Importer"),
    "pku-mmd-v1": ("skelssl.data.importers.pku", "PKUMMDv1Importer"),
    "pku-mmd-v2": ("skelssl.data.importers.pku", "PKUMMDv2Importer"),
    "utkinect": ("skelssl.data.importers.utkinect", "UTKinectImporter"),
    "nw-ucla": ("skelssl.data.importers.nwucla", "NWUCLAImporter"),
    "sbu": ("skelssl.data.importers.sbu", "SBUImporter"),
    "florence3d": ("skelssl.data.importers.florence", "Florence3DImporter"),
    "generic": ("skelssl.data.importers.generic", "GenericImporter"),
    "pyskl": ("skelssl.data.importers.interop", "PySKLImporter"),
    "aimclr": ("skelssl.data.importers.interop", "AimCLRImporter"),
    "ctrgcn": ("skelssl.data.importers.interop", "CTRGCNImporter"),
}

SOURCES: tuple[str, ...] = tuple(_REGISTRY)


def get_importer_class(source: str) -> type[Importer]:
    """The importer class for a source name; ``ConfigError`` with the closest name otherwise."""
    if source not in _REGISTRY:
        hint = closest(source, _REGISTRY)
        raise ConfigError(
            f"unknown source {source!r}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; sources: {', '.join(SOURCES)}"
        )
    module, name = _REGISTRY[source]
    return getattr(importlib.import_module(module), name)
