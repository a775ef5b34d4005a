"""The lecture's computations, by hand: ``scratch`` (perceptron, backpropagation and gradient
descent without autograd), ``race`` (optimizers on a 2-D surface), ``gradients`` (how noisy a
mini-batch gradient is). ``mlplab.figures`` draws them."""
