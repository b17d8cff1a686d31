#!/bin/sh
# One-shot MinIO setup, run by the `minio-setup` service in docker-compose.yml and by the Job in
# minio-bucket-job.yaml. Idempotent: safe to run again on every start.
#   1. create the checkpoint bucket;
#   2. create the gateway's S3 user, limited by a policy to that one bucket, so the Ray pods
#      never hold MinIO's root credentials.
# Needs: MINIO_URL, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, NMEM_S3_BUCKET,
#        NMEM_S3_ACCESS_KEY, NMEM_S3_SECRET_KEY.
set -eu

# mc keeps its alias config under $HOME; the container may run with a read-only, foreign HOME.
export HOME=/tmp

until mc alias set nmem "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at $MINIO_URL ..."
  sleep 3
done

mc mb --ignore-existing "nmem/$NMEM_S3_BUCKET"

cat > /tmp/neural-memory-policy.json <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$NMEM_S3_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$NMEM_S3_BUCKET/*"]
    }
  ]
}
POLICY

mc admin policy create nmem neural-memory-checkpoints /tmp/neural-memory-policy.json
mc admin user add nmem "$NMEM_S3_ACCESS_KEY" "$NMEM_S3_SECRET_KEY"
# `policy attach` fails when the policy is already attached, so look first.
if ! mc admin user info nmem "$NMEM_S3_ACCESS_KEY" | grep -q neural-memory-checkpoints; then
  mc admin policy attach nmem neural-memory-checkpoints --user "$NMEM_S3_ACCESS_KEY"
fi
echo "MinIO ready: bucket $NMEM_S3_BUCKET, user $NMEM_S3_ACCESS_KEY"
