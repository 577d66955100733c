"""A data loader shown as a progress bar on the main process."""
from __future__ import annotations

from fastreid.utils import comm
from tqdm import tqdm


class Progress:
    """Wrap ``loader`` so that iterating it shows a tqdm bar (main process only).

    Every other attribute is the loader's, so fastreid code that inspects the loader still works.
    """

    def __init__(self, loader, desc: str):
        self._loader, self._desc = loader, desc

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __iter__(self):
        yield from tqdm(self._loader, desc=self._desc, total=len(self._loader),
                        disable=not comm.is_main_process(), dynamic_ncols=True, leave=False)
