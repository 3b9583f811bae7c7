"""A minimal importer over real NW-UCLA json files, for testing the store and the driver on their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from skelssl.data.importers.base import (
    BadInputError,
    Importer,
    Rejected,
    TaskResult,
    check_keypoints,
    decode_text,
    digest_bytes,
    read_bytes,
)


class ToyImporter(Importer):
    """One json file per task; ``fail_on`` makes a task raise (to test interruption)."""

    source = "toy"
    layout = "kinect20"
    num_persons = 2

    def __init__(self, files: list[Path], fail_on: int | None = None, exc: type[BaseException] = KeyboardInterrupt):
        super().__init__(files[0].parent if files else ".")
        self.files = files
        self.fail_on = fail_on
        self.exc = exc

    def tasks(self) -> list[Any]:
        return list(range(len(self.files)))

    def run(self, task: int) -> TaskResult:
        if task == self.fail_on:
            raise self.exc("boom")
        path = self.files[task]
        try:
            data = read_bytes(path)
            obj = json.loads(decode_text(path, data))
            kp = np.asarray(obj["skeletons"], dtype=np.float32)[:, None]
            kp = check_keypoints(path, kp, num_joints=20, channels=(3,))
        except BadInputError as err:
            return TaskResult(rejected=[Rejected.from_error(err)], digest="")
        except (ValueError, KeyError, TypeError, IndexError) as err:
            return TaskResult(rejected=[Rejected(str(path), f"invalid json: {err}")], digest="")
        name = obj["file_name"]
        fields = {"views": int(name[-2:]), "subjects": int(name[5:7]), "tag": name[:3]}
        from skelssl.data.importers.base import Sequence

        return TaskResult(sequences=[Sequence(name, kp, obj["label"] - 1, fields)], digest=digest_bytes(data))

    def class_names(self) -> list[str]:
        return [f"class{i}" for i in range(10)]

    def splits(self) -> dict[str, dict[str, Any]]:
        return {"xview": {"by": "views", "train": [1, 2]}, "explicit": {"by": "views", "train": [1], "test": [3]}}
