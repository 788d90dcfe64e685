"""A tiny training run for the crash-and-resume tests:
`python tests/toy_stage.py RUN DATA [kill_at|-] [--resume] [--buckets]`.

It trains through ldm.stages.trainer.fit on the real datamodule, draws random numbers in training and in
validation (as the real stages do: noise, dropout, sampling), and can SIGKILL itself after a given
step's checkpoint, so the test can check that resuming reproduces an uninterrupted run exactly.
With --buckets it trains on aspect-ratio buckets (batches of different shapes, BucketBatchSampler).
"""

import os
import signal
import sys

import lightning as L
import torch
from safetensors.torch import save_file

from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule
from ldm.stages.run_config import RunConfig, TrainConfig
from ldm.stages.trainer import fit


class Toy(L.LightningModule):
    def __init__(self, kill_at: int | None):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(8, 3, 3, padding=1))
        self.kill_at = kill_at

    def training_step(self, batch, batch_idx):
        x = batch["pixel_values"]
        noisy = x + 0.1 * torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(self.net(noisy), x)
        self.log("train/loss", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # checkpoints are written in the callbacks' on_train_batch_end, which runs after this hook;
        # so die one step later, when the checkpoint of kill_at - 1 is surely on disk
        if self.kill_at is not None and self.global_step == self.kill_at + 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def validation_step(self, batch, batch_idx):
        x = batch["pixel_values"]
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x + torch.randn_like(x)), x))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 5))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main(run_dir, data_dir, kill_at=None, resume=False, buckets=False):
    torch.set_num_threads(1)
    cfg = RunConfig(
        stage="toy", run_dir=run_dir,
        data=DataConfig(source=data_dir, resolution=16, batch_size=4, val_fraction=0.2,
                        buckets={} if buckets else None, center_crop=not buckets),
        train=TrainConfig(max_steps=14, val_every_n_steps=3, checkpoint_every_n_steps=4,
                          keep_checkpoints=2, ckpt_path="last" if resume else None, lr=1e-2),
    )
    L.seed_everything(0)
    module = Toy(kill_at)
    trainer = fit(cfg, module, ImageCaptionDataModule(cfg.data))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()},
              os.path.join(run_dir, "final.safetensors"))
    print("global_step", trainer.global_step)


if __name__ == "__main__":
    kill = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    main(sys.argv[1], sys.argv[2], kill, resume="--resume" in sys.argv, buckets="--buckets" in sys.argv)
