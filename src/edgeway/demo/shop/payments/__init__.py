"""The payments service: charges and refunds; the ``payments.fail`` flag declines on demand."""
