"""Run logging: always metrics.jsonl in the run directory, plus wandb (offline unless told otherwise)."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from rayunify.config import Config


def _clean(value: Any) -> Any:
    """Strict JSON: NaN/inf become null (a metric that could not be measured this step)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count_rows(path: Path) -> int:
    with path.open() as stream:
        return sum(1 for line in stream if line.strip())


class RunLogger:
    def __init__(self, run_dir: Path, cfg: Config, resume: bool = False):
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.file = self.path.open("a" if resume else "w")
        self.rows = _count_rows(self.path) if resume else 0  # a checkpoint records it: a resume goes back to it
        self.start = time.time()
        self.wandb = None
        if cfg.logger.type == "wandb":
            self.wandb = self._init_wandb(cfg, resume)

    def _init_wandb(self, cfg: Config, resume: bool):
        import wandb

        if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"  # no key: keep everything local, sync later with `wandb sync`
        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        return wandb.init(
            project=cfg.logger.project,
            name=cfg.logger.run_name or cfg.trainer.run_name,
            id=run_id,
            resume="allow" if resume else None,
            dir=str(self.run_dir),
            config=cfg.model_dump(mode="json"),
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "elapsed_s": round(time.time() - self.start, 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        self.rows += 1
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step=step)

    def rewind(self, rows: int | None) -> Path | None:
        """Back to the first `rows` rows (what the resumed checkpoint had seen): the rows after them, which
        the resumed run logs again, move to metrics.dropped.<time>.jsonl. Returns that file (None: nothing
        to drop, or `rows` unknown, from a checkpoint of an older version)."""
        if rows is None or rows >= self.rows:
            return None
        self.file.close()
        lines = self.path.read_text().splitlines(keepends=True)
        aside = self.run_dir / f"metrics.dropped.{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        aside.write_text("".join(lines[rows:]))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(lines[:rows]))
        os.replace(tmp, self.path)
        self.file, self.rows = self.path.open("a"), rows
        return aside

    def log_image(self, step: int, key: str, path: Path, caption: str = "") -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def log_table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    @property
    def wandb_dir(self) -> str | None:
        return None if self.wandb is None else str(Path(self.wandb.dir).parent)

    def close(self) -> None:
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()
