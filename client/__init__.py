"""The gradserve Python client."""
