"""Overrides that make a PSTL run tiny (a 4-channel ST-GCN, 2 epochs of batch 8 on the small NW-UCLA store)."""

TINY_PSTL = [
    "data.split=xview",
    "train.epochs=2",
    "train.batch_size=8",
    "train.drop_last=true",
    "train.log_every_steps=1",
    "train.checkpoint_every_epochs=1",
    "train.threads=1",
    "schedule.warmup_epochs=1",
    "pstl.hidden_channels=4",
    "pstl.hidden_dim=32",
    "pstl.projector_dim=64",
]
