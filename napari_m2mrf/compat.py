"""Checks that optional packages found at run time form a set that works together.

pip installs ``dask`` and ``distributed`` as independent packages, so an environment can hold a pair
that fails deep inside a run (``ImportError: cannot import name 'collections_to_dsk'`` from an old
``distributed`` beside a new ``dask``). These checks read the installed versions from package
metadata, without importing either package, and compare them with what ``dask`` itself requires of
``distributed`` (its ``distributed`` extra pins the matching release).
"""

from __future__ import annotations

import logging
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

from napari_m2mrf.errors import UserError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'napari-m2mrf[distributed]'"


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def distributed_requirement(dask_requirements: list[str] | None) -> Requirement | None:
    """What ``dask``'s ``distributed`` extra asks of ``distributed`` (e.g. ``>=2026.8.0,<2026.8.1``)."""
    for line in dask_requirements or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if requirement.name == "distributed" and marker is not None and marker.evaluate({"extra": "distributed"}):
            return requirement
    return None


def require_dask_distributed() -> None:
    """Raise one clear :class:`UserError` unless matching ``dask`` and ``distributed`` are installed.

    The message names the versions found and the versions needed, so a user can fix the environment
    before any work starts.
    """
    dask_version, distributed_version = _installed("dask"), _installed("distributed")
    if dask_version is None or distributed_version is None:
        missing = " and ".join(name for name, v in (("dask", dask_version), ("distributed", distributed_version)) if v is None)
        raise UserError(f"distributed runs need {missing}: {INSTALL_HINT}")
    requirement = distributed_requirement(metadata.requires("dask"))
    if requirement is None:
        logger.debug("dask %s states no requirement on distributed; accepting distributed %s", dask_version, distributed_version)
        return
    if not requirement.specifier.contains(distributed_version, prereleases=True):
        raise UserError(
            f"dask {dask_version} needs distributed{requirement.specifier}, but distributed {distributed_version} "
            f"is installed: {INSTALL_HINT} (or pip install 'distributed{requirement.specifier}')"
        )
    logger.debug("dask %s with distributed %s", dask_version, distributed_version)
