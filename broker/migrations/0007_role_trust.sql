-- Schema version 7: a role's trust policy (who may assume it). NULL: the account is trusted,
-- which is how roles created before trust policies behave.
ALTER TABLE principals ADD COLUMN trust_policy TEXT;
