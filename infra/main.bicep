// Run Command / UEBA detector: a timer-triggered Python Function App on Flex Consumption.
// Managed identity everywhere, no keys: storage with shared-key access off, Key Vault (RBAC) for the
// webhook URLs, and only the roles the detector needs.
//
// Order on a first deployment (no cycle: the compiler's BCP080): storage, vault, insights and plan; the
// app and its identity; the role assignments (modules, named from scope + principal id + role); and last
// the app settings (a sites/config resource that depends on every assignment and secret they use), so
// Key Vault references and identity-based storage resolve on the first start.
targetScope = 'resourceGroup'

@description('Azure region of the detector.')
param location string = resourceGroup().location

@description('Short prefix for resource names (3-11 lowercase letters or digits).')
@minLength(3)
@maxLength(11)
param namePrefix string

@description('Resource id of the Microsoft Sentinel Log Analytics workspace (it may live in another resource group or subscription).')
param sentinelWorkspaceResourceId string

@description('Teams Workflows webhook URLs, one per line (secret: stored in Key Vault). Empty: the stored secret is kept.')
@secure()
param teamsWebhookUrls string = ''

@description('Logic App HTTP trigger URLs, one per line (secret: stored in Key Vault). Empty: the stored secret is kept.')
@secure()
param logicAppWebhookUrls string = ''

@description('Deliver to Teams: the app setting references the Key Vault secret (which must hold the URLs by then). false: no Teams delivery.')
param teamsDelivery bool = true

@description('Deliver to a Logic App: the app setting references the Key Vault secret (which must hold the URLs by then). false: no Logic App delivery.')
param logicAppDelivery bool = true

@description('NCRONTAB schedule of the daily run (UTC).')
param schedule string = '0 0 6 * * *'

@description('NCRONTAB schedule of the outbox re-send timer.')
param redeliverSchedule string = '0 */15 * * * *'

@description('Rules to run: comma-separated rule ids, seed or all (default: the seed rule alone; README, Extended rules).')
param rules string = 'seed'

@description('Query period in hours (the rule: 48).')
param periodHours int = 48

@description('Hours between scheduled runs (the rule: 24).')
param frequencyHours int = 24

@description('How far back a run widens its window after missed runs, in days.')
param maxCatchupDays int = 14

@description('More alerts than this in one delivery make one Teams digest card.')
param digestThreshold int = 50

@description('UPN or Entra object id of the on-call person mentioned on every Teams card (empty: no mention)')
param oncallMentionId string = ''

@description('Display name shown for the on-call mention')
param oncallMentionName string = ''

@description('https URL template of the cards\' Request exception button ({entry}, {alert_id}, {caller}, {vm})')
param exceptionRequestUrl string = ''

@description('Comma-separated resource groups whose VMs raise an alert\'s triage priority')
param priorityResourceGroups string = ''

@description('Object id of a person or group allowed to manage the webhook secrets (optional).')
param secretsAdminObjectId string = ''

@description('tables: read only AzureActivity and BehaviorAnalytics (table-level RBAC; the deployer needs rights to create a custom role); workspace: Log Analytics Reader on the whole workspace.')
@allowed([
  'tables'
  'workspace'
])
param sentinelReadAccess string = 'tables'

@description('Change to give the Key Vault a new name, e.g. when a deleted vault of the old name is still soft-deleted.')
param keyVaultNameSeed string = ''

@description('Log Analytics server timeout per query, in seconds. At most 170: two queries of five attempts each must fit in half of host.json functionTimeout (README, Deploy to Azure).')
@minValue(10)
@maxValue(170)
param queryTimeoutSeconds int = 120

// The Python the deployment package is built for (scripts/package reads this line).
var pythonVersion = '3.13'

@description('Hours past the frequency before a missing run is reported (the detector\'s own message and the Azure Monitor alert).')
@minValue(0)
@maxValue(24)
param healthGraceHours int = 2

@description('Email addresses that Azure Monitor alerts when the detector stops running or fails (may be empty).')
param monitorEmailAddresses array = []

@description('Webhook URLs (e.g. an on-call tool) that Azure Monitor alerts, one per line (secret).')
@secure()
param monitorWebhookUrls string = ''

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageName = toLower(take('${namePrefix}st${suffix}', 24))
var vaultName = take('${namePrefix}-kv-${uniqueString(resourceGroup().id, namePrefix, keyVaultNameSeed)}', 24)
var deploymentContainer = 'deployments'
var tables = [
  'detectorallowlist'
  'detectoralerts'
  'detectorruns'
]
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var teamsSecretName = 'teams-webhook-urls'
var logicAppSecretName = 'logicapp-webhook-urls'
var sentinelParts = split(sentinelWorkspaceResourceId, '/')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint; shared keys are off, so only Entra identities with data roles get in.
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public endpoint, identity-only access, no anonymous blob access.
  // checkov:skip=CKV_AZURE_43: the name is built by take(toLower(...), 24) from a validated prefix and uniqueString(): valid by construction, not a literal the check can read.
  name: storageName
  location: location
  sku: {
    name: 'Standard_GZRS'
  }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deployments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource detectorTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for table in tables: {
  parent: tableService
  name: table
}]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-log-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-appi-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_189: Flex Consumption without VNet integration resolves Key Vault references over the public endpoint; access is RBAC-only (Key Vault Secrets User for the app).
  // checkov:skip=CKV_AZURE_110: purge protection would reserve the vault's name for 90 days after the resource group is deleted, so recreating the group would fail; the vault holds only webhook URLs their owners can reissue.
  // checkov:skip=CKV_AZURE_42: soft delete is on (7 days, azd down --purge or az keyvault purge frees the name); purge protection is off for the reason given under CKV_AZURE_110.
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // checkov:skip=CKV_AZURE_109: Flex Consumption apps without VNet integration reach Key Vault over the public endpoint; access is RBAC-only.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// A secret is written only when a value is given: a redeploy without the URLs keeps the stored (perhaps
// rotated) secret. The app settings name the secret without a version, so the latest one is used.
resource teamsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(teamsWebhookUrls)) {
  parent: vault
  name: teamsSecretName
  properties: {
    // checkov:skip=CKV_AZURE_41: webhook URLs are rotated by the flow owner, not on a timer; an expiry would silently stop delivery.
    // checkov:skip=CKV_AZURE_114: contentType is set below; checkov's parser does not read the body of a conditional resource.
    value: teamsWebhookUrls
    contentType: 'text/plain; one URL per line'
  }
}

resource logicAppSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(logicAppWebhookUrls)) {
  parent: vault
  name: logicAppSecretName
  properties: {
    // checkov:skip=CKV_AZURE_41: webhook URLs are rotated by the flow owner, not on a timer; an expiry would silently stop delivery.
    // checkov:skip=CKV_AZURE_114: contentType is set below; checkov's parser does not read the body of a conditional resource.
    value: logicAppWebhookUrls
    contentType: 'text/plain; one URL per line'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a once-a-day batch job; a zone outage delays a run and the watermark catches the window up, so zone redundancy buys nothing here.
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState; FTP and SCM basic auth are turned off by the basicPublishingCredentialsPolicies below.
  // checkov:skip=CKV_AZURE_222: the app has timer triggers only and no HTTP functions; the public endpoint serves only Entra-protected deployment, and disabling it would block publishing from outside a VNet.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; a daily timer needs no always-ready instances.
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe: the app has timer triggers only, and failed runs are recorded by the platform.
  name: '${namePrefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  tags: {
    'azd-service-name': 'detector'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: true
    clientCertMode: 'Required'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
    }
  }
}

// No FTP and no basic-auth publishing: deployment uses the managed identity and the blob container.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

// Least privilege: each role on the one resource that needs it (module: names use the principal id).
module appRoles 'modules/app-roles.bicep' = {
  name: 'app-roles-${suffix}'
  params: {
    principalId: app.identity.principalId
    storageAccountName: storage.name
    vaultName: vault.name
    insightsName: insights.name
  }
}

resource secretsAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsAdminObjectId)) {
  name: guid(vault.id, secretsAdminObjectId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: secretsAdminObjectId
  }
}

// The Sentinel workspace, wherever it lives: read directly (its customerId) and granted in a module.
resource sentinelWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: last(sentinelParts)
  scope: resourceGroup(sentinelParts[2], sentinelParts[4])
}

module sentinelAccess 'modules/sentinel-reader.bicep' = {
  name: 'sentinel-reader-${suffix}'
  scope: resourceGroup(sentinelParts[2], sentinelParts[4])
  params: {
    workspaceName: last(sentinelParts)
    principalId: app.identity.principalId
    access: sentinelReadAccess
  }
}

// Every app setting lives here (this resource replaces the whole set), created after the roles and secrets
// it relies on. The DETECTOR_* names are checked against detector/settings.py by tests/test_infra.py.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: this is the 'appsettings' config (a name/value map); checkov applies web-config checks to every sites/config. No HTTP functions to authenticate.
  // checkov:skip=CKV_AZURE_63: web-config check applied to the appsettings map; HTTP logging concerns the web config, and the app serves no HTTP functions.
  // checkov:skip=CKV_AZURE_65: web-config check applied to the appsettings map; detailed error pages concern HTTP responses, and the app serves none.
  // checkov:skip=CKV_AZURE_66: web-config check applied to the appsettings map; failed request tracing concerns HTTP requests, and the app serves none.
  // checkov:skip=CKV_AZURE_80: web-config check applied to the appsettings map; the app runs Python, not .NET.
  // checkov:skip=CKV_AZURE_88: web-config check applied to the appsettings map; Flex Consumption keeps the package in the blob deployment container, not Azure Files.
  // checkov:skip=CKV_AZURE_222: web-config check applied to the appsettings map; see the same skip on the app itself (timer triggers only).
  parent: app
  name: 'appsettings'
  dependsOn: [
    appRoles
    sentinelAccess
    teamsSecret
    logicAppSecret
  ]
  properties: {
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
    DETECTOR_WORKSPACE_ID: sentinelWorkspace.properties.customerId
    DETECTOR_TABLE_ENDPOINT: storage.properties.primaryEndpoints.table
    DETECTOR_TEAMS_WEBHOOK_URLS: teamsDelivery ? '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${teamsSecretName}/)' : ''
    DETECTOR_LOGICAPP_WEBHOOK_URLS: logicAppDelivery ? '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${logicAppSecretName}/)' : ''
    DETECTOR_SCHEDULE: schedule
    DETECTOR_REDELIVER_SCHEDULE: redeliverSchedule
    DETECTOR_RULES: rules
    DETECTOR_PERIOD_HOURS: string(periodHours)
    DETECTOR_FREQUENCY_HOURS: string(frequencyHours)
    DETECTOR_MAX_CATCHUP_DAYS: string(maxCatchupDays)
    DETECTOR_DIGEST_THRESHOLD: string(digestThreshold)
    DETECTOR_HTTP_TIMEOUT_SECONDS: '10'
    DETECTOR_HTTP_MAX_SECONDS: '60'
    DETECTOR_QUERY_TIMEOUT_SECONDS: string(queryTimeoutSeconds)
    DETECTOR_TENANT_ID: subscription().tenantId
    DETECTOR_WORKSPACE_RESOURCE_ID: sentinelWorkspaceResourceId
    DETECTOR_ONCALL_MENTION_ID: oncallMentionId
    DETECTOR_ONCALL_MENTION_NAME: oncallMentionName
    DETECTOR_EXCEPTION_REQUEST_URL: exceptionRequestUrl
    DETECTOR_PRIORITY_RESOURCE_GROUPS: priorityResourceGroups
    DETECTOR_HEALTH_GRACE_HOURS: string(healthGraceHours)
    DETECTOR_SEND_UPDATES: 'true'
    DETECTOR_STATE_RETENTION_DAYS: '30'
  }
}

// Azure Monitor alerting on the detector's own runs: the second, independent path (README "Self-monitoring").
module monitoring 'modules/monitoring.bicep' = {
  name: 'detector-monitoring-${suffix}'
  params: {
    location: location
    namePrefix: namePrefix
    appInsightsId: insights.id
    silenceHours: frequencyHours + healthGraceHours
    emailAddresses: monitorEmailAddresses
    webhookUrls: monitorWebhookUrls
  }
}

output functionAppName string = app.name
output principalId string = app.identity.principalId
output tableEndpoint string = storage.properties.primaryEndpoints.table
output keyVaultName string = vault.name
