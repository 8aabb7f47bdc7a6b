"""The controller: Backups and Restores, reconciled from their status."""
