"""The versioned Kedro dataset for :class:`~timam.formats.tensor_bundle.TensorBundle` files, on any fsspec filesystem.

A local file is written atomically (a temporary sibling renamed into place); on an object store the
file is one PUT, which publishes it whole or not at all, so no temporary is needed there.
"""

from __future__ import annotations

from timam.formats.tensor_bundle import (
    TensorBundle,
    UnreadableBundleError,
    bundle_bytes,
    bundle_from_bytes,
    load_bundle,
    save_bundle,
)
from timam.io.errors import as_dataset_error
from timam.io.fsspec_dataset import FsspecVersionedDataset


class TensorBundleDataset(FsspecVersionedDataset[TensorBundle, TensorBundle]):
    """Kedro dataset for tensor bundles; on load, ``metadata["version"]`` names the file version.

    Arguments as kedro-datasets' file datasets: ``filepath`` (with a protocol for remote storage),
    ``version``, ``credentials``, ``fs_args``, ``metadata``.
    """

    def load(self) -> TensorBundle:
        path = self._existing_load_path()
        with as_dataset_error(UnreadableBundleError):
            if self._is_local:
                bundle = load_bundle(path)
            else:
                with self._fs.open(path, "rb", **self._fs_open_args_load) as handle:
                    bundle = bundle_from_bytes(handle.read(), self._url(self._get_load_path()))
        bundle.metadata["version"] = self.resolve_load_version()
        return bundle

    def save(self, data: TensorBundle) -> None:
        path = self._path(self._get_save_path())
        with as_dataset_error():
            if self._is_local:
                save_bundle(data, path)
            else:
                with self._fs.open(path, "wb", **self._fs_open_args_save) as handle:
                    handle.write(bundle_bytes(data))
        self._invalidate_cache()
