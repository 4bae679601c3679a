"""Real image–text data for training priors: readers for the formats datasets ship in, and embedding folders.

* :mod:`evalkit.data.sources` reads webdataset / img2dataset tar shards and CSV / TSV / parquet / JSONL
  manifests as *work units* (one shard, or a chunk of manifest rows), so that many processes and DataLoader
  workers can share a dataset without coordination, and bad records are counted instead of crashing a run.
* :mod:`evalkit.data.embeddings` is the folder ``evalkit embed`` writes (clip-retrieval's layout, raw
  embeddings) and the reader a prior trainer uses on it.
* :mod:`evalkit.data.tiny` writes tiny encoders and datasets in the public layouts, for tests and examples.

Nothing here is imported by ``import evalkit``: the modules pull in pyarrow, webdataset and PIL.
"""
