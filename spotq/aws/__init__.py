"""The only code that talks to AWS (aioboto3): SQS, EC2, Auto Scaling."""
