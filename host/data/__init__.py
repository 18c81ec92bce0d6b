"""Package data: the embedded MNIST subset (IDX, gzipped); see :mod:`fxtrain.host.datasets`."""
