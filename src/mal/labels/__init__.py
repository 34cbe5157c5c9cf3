"""mal.labels: hand a label file (the COCO output of `mal inference`) to the tools teams review in.

`mal labels export LABELS.json --format fiftyone|cvat|labelstudio --out DIR` (mal.labels.export) reads the file
once (mal.labels.label_set), then one small writer per tool fills a staged folder (mal.labels.staging) that is
renamed into place only when complete. The Label Studio writer needs the `export` extra; it is imported lazily.
"""
