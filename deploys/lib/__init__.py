"""Building blocks of the deploys: settings, facts, operations and the pure planning behind them."""
