"""One Prefect @flow per file; flows only wire tasks."""
