"""Candle data for backtests: Binance's public kline files, freqtrade's data files and our
own CSV, read with pandas (pyarrow under it for feather and parquet), checked, and kept
under ``LUNARA_HOME/data``.

Only the CLI's ``data`` and ``backtest`` commands import this package: the supervised bot
never loads pandas, so its memory stays within its budget. Nothing is imported here, so
``import lunara.data.timeframes`` stays light.
"""
