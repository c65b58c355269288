using './main.bicep'

// One parameters file for `azd up` (which exports the azd environment's values) and for plain
// `az deployment group create` (export the same variables first). The webhook URLs are secrets: give them
// from the environment on the first deployment or when they change, never in this file; a deployment
// without them keeps the stored secrets.
param namePrefix = readEnvironmentVariable('DETECTOR_NAME_PREFIX', 'rcueba')
param sentinelWorkspaceResourceId = readEnvironmentVariable('SENTINEL_WORKSPACE_RESOURCE_ID')
param sentinelReadAccess = readEnvironmentVariable('SENTINEL_READ_ACCESS', 'tables')
param teamsWebhookUrls = readEnvironmentVariable('TEAMS_WEBHOOK_URLS', '')
param logicAppWebhookUrls = readEnvironmentVariable('LOGICAPP_WEBHOOK_URLS', '')
param teamsDelivery = bool(readEnvironmentVariable('TEAMS_DELIVERY', 'true'))
param logicAppDelivery = bool(readEnvironmentVariable('LOGICAPP_DELIVERY', 'true'))
param secretsAdminObjectId = readEnvironmentVariable('SECRETS_ADMIN_OBJECT_ID', '')
param schedule = '0 0 6 * * *'
param redeliverSchedule = '0 */15 * * * *'
param periodHours = 48
param frequencyHours = 24
param maxCatchupDays = 14
param digestThreshold = 50
param healthGraceHours = 2
param monitorEmailAddresses = [
  'oncall@contoso.com'
]
