"""smalgo.algorithms: the ML, knowing nothing of HTTP or of /opt/ml.

contract.py         the Algorithm and Model contract every algorithm satisfies
registry.py         the algorithms by name
training.py         the driver that runs every mini-batch algorithm's passes
batch.py, data.py   the data model (Batch) and what training reads it through (TrainingData)
hyperparameters.py  declarative hyperparameter schemas
metrics.py          metric lines in the platform's form
model_files.py      model.json and .npy arrays, never pickle
errors.py           UserError: what the user gave us is wrong
formats/            content types and decoders (CSV; RecordIO comes from smalgo.recordio)
runtime/            device choice, threads, CPU count, logging
kmeans/, pca/       one subpackage per algorithm: its declaration, module and kernels
"""
