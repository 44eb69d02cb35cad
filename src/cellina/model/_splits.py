"""Train / validation / test indices for held-out training runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holdout_split(
    n_obs: int,
    test_indices: Sequence[int] | np.ndarray | None,
    validation_size: float = 0.1,
    seed: int = 0,
) -> list[np.ndarray]:
    """``[train, validation, test]`` positions for ``datasplitter_kwargs={"external_indexing": ...}``.

    The published protocol's construction: the test cells are held out, and the rest is
    split with scikit-learn's ``train_test_split(test_size=validation_size,
    random_state=seed, shuffle=True)``. Each part is returned sorted; with
    ``validation_size=0`` the validation part is empty.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 <= validation_size < 1.0:
        raise ValueError(f"`validation_size` must lie in [0, 1), got {validation_size!r}.")
    test = np.unique(np.asarray([] if test_indices is None else test_indices, dtype=np.int64))
    if test.size and (test[0] < 0 or test[-1] >= n_obs):
        raise IndexError(f"test indices must lie in [0, {n_obs})")
    trainval = np.setdiff1d(np.arange(n_obs), test)
    if trainval.size < 2:
        raise ValueError(f"only {trainval.size} cell(s) left for training and validation")
    if validation_size == 0:
        return [trainval, np.zeros(0, dtype=np.int64), test]
    train, validation = train_test_split(trainval, test_size=validation_size, random_state=seed, shuffle=True)
    return [np.sort(train), np.sort(validation), test]
