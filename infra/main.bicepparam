using './main.bicep'

// Example parameters: copy, fill in, and deploy with
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam \
//     -p teamsWebhookUrls="$TEAMS_URLS" -p logicAppWebhookUrls="$LOGICAPP_URLS"
// (pass the webhook URLs on the command line or from a pipeline secret, never in this file).
param namePrefix = 'rcueba'
param sentinelWorkspaceResourceId = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-sentinel/providers/Microsoft.OperationalInsights/workspaces/law-sentinel'
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
