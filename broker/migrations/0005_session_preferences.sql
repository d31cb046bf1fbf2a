-- Schema version 5: what DescribeSessions shows of the preferences a session started with.
ALTER TABLE sessions ADD COLUMN max_duration_minutes INTEGER;
ALTER TABLE sessions ADD COLUMN s3_output_url TEXT;
ALTER TABLE sessions ADD COLUMN cloudwatch_output_url TEXT;
