"""Data: MNIST offline (``hookedmlp.data.mnist``), labelled data for class contrasts (``hookedmlp.data.labelled``)."""

from hookedmlp.data.mnist import MNIST_MD5, default_root, first_example, load_mnist, mnist_dataset, prepare_mnist

__all__ = ["MNIST_MD5", "default_root", "prepare_mnist", "mnist_dataset", "load_mnist", "first_example"]
