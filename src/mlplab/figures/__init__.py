"""The lecture's figures: ``plots`` draws each PNG (pure functions, no pyplot state);
``callbacks`` draws a run's learning curves and decision boundary as it trains."""
