"""Training on open_clip's own training code with DataComp's fixed harness (reference §4).

- scales.py: the recipes (DataComp's debug..xlarge, and curate's unofficial CPU `tiny`);
- data.py: `--train-data` from a data directory, as DataComp's train.py builds it;
- args.py: what a user may set, and the argv for `open_clip_train.main.main`;
- launch.py: one process, or torchrun over the GPUs of one node; logs and progress;
- entry.py: the training process itself (registers curate's models, then open_clip's main);
- info.py: info.json and DataComp's info.pkl;
- job.py: one training start to finish (resume, skip when done).

Several nodes (not launched by curate): print the argv with
`curate train --scale large --data DIR --out DIR --gpus 8 --nodes 4 --dry-run`, then run on every node
(same HOST:PORT and JOB id everywhere; HOST is node 0):

    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \
        --rdzv_id JOB -m -- curate.training.entry <argv>

The data and the output folder must be on storage that every node sees; rank 0 writes the checkpoints.
Afterwards, `curate train` with the same arguments (without --nodes, e.g. --gpus 8) on one node finds
the finished checkpoint, lets open_clip confirm there is nothing left to train, and writes info.json
and info.pkl (epochs trained outside curate are counted with this launch's samples per epoch).
"""
